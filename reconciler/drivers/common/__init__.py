"""What every driver shares: labels, the engine connection, images, host ports, probes, step
errors, the serving view and the gateway config. No driver imports another; they meet here."""
