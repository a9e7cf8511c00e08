"""Training: synthetic occluded data, dataset adapters, the IdGen / ExpGen / IdRank trainers, DEMO weights."""
