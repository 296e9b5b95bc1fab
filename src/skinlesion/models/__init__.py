"""Models: offline pretrained backbones, the from-scratch CNN, weight penalties, the LightningModule."""
