"""Run plumbing shared by every command: errors, paths, artefacts, checkpoints, resume, devices."""
