"""Input readers: event files (Parquet, plus NDJSON/CSV) into one normalised frame."""
