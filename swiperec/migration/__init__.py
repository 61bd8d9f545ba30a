"""The training data's staged migration from review-based pseudo-users to real users."""
