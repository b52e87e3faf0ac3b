"""Programs: `run(config, workdir)` entry points that experiments name."""
