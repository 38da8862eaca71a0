"""Reserved for the drone issue; empty until then."""
