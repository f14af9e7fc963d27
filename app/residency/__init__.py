"""Many models in a bounded memory: model pools named by globs, loaded on first
request and evicted least recently used by measured memory."""
