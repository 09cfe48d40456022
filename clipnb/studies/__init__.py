"""One module per chapter, named as its notebook: the sweeps, figures and verdicts."""
