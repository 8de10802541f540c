"""Models that read text out of media for the feature record's other sources: on-screen text (OCR) today."""
