"""Model families, one per module; importing a module registers its variants."""
