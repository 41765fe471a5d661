"""Watching what the models see after training: drift statistics between a reference and a batch of
listings, predictions, cover images and embeddings, and the offline report people read."""
