"""The paper's method (§2): network, memories, losses, prototypes and the groupings that form them."""
