"""Data: the safe image decoder, preparation (hash, group, split), transforms and the DataModule."""
