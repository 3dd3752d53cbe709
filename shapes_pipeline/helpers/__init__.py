"""What the steps share: storage, the registry, data shards, the model and its report."""
