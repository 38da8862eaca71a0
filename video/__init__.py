"""Reserved for the video issue; empty until then."""
