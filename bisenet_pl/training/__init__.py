"""Training: the LightningModule and what it is made of (loss, LR schedule, AMP scaler), its callbacks
and logger factories. The only subpackage that imports Lightning; none imports Hydra."""
