"""LLM and embedding models on the OpenAI API: tokenizers, chat templates, engine requests."""
