"""CLIP fine-tuned on the covers: the model, the loss, data and shards, the training loop on one
device or many, checkpoints, the fine-tune stage, evaluation with its gallery, and the pyfunc wrapper."""
