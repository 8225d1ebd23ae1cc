"""What edge and cloud share: `protocol` (what they say) and `learning` (what they both run)."""
