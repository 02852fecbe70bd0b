"""MLflow: tracking, the model registry's versions and aliases, and the pyfunc form of a candidate."""
