"""Test bundle: a small seeded SIR model whose daily step comes from the `sirsteps` wheel."""
