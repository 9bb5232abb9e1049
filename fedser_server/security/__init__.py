"""Who may talk to the coordinator: enrolment tokens (hashed at rest) and dev certificates."""
