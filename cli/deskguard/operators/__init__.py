"""What the operators at the laptops see: the catalogs of their messages in every language we speak."""
