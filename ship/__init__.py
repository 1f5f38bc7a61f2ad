"""The ship path: the scripts the Makefile drives to build, run, push and deploy the model."""
