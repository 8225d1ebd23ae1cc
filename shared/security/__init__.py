"""The federation's identities: its own CA and the certificates it issues."""
