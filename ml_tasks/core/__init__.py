"""The ground every layer stands on: the model spec, settings, manifests, column names and metric
directions, run-artifact names, the CPU budget and the run plan."""
