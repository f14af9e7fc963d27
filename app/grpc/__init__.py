"""Triton's gRPC protocol (``inference.GRPCInferenceService``) on the Serve ingress."""
