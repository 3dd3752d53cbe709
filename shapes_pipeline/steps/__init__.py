"""The steps as plain typed functions, runnable without KFP: one per container step."""
