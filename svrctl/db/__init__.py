"""The app database: models, engine and schema checks."""
