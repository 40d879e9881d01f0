"""CEL conformance: the official cel-spec cases run against both perkflow backends."""
