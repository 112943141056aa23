"""Everything that is not UI: settings, device choice, the pipeline, generation."""
