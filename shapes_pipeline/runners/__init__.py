"""The command line, the local run and the cluster client: the top layer."""
