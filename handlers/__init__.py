"""Provider handlers: translate a provider's event into a core Job and the core's Result or
JobError into the provider's reply. No image work and no torch here (a test checks)."""
