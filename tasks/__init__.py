"""Pipeline stages: discover, label, extract, validate, load, split, train. No Prefect here."""
