"""Wire protocols spoken by the router: pure parsing and encoding, no Ray, no Triton runtime."""
