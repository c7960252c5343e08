"""The team's shared services (PostgreSQL studies, an MLflow server with logins), apart from the ML code."""
