"""Small shared helpers: errors, atomic IO, seeding, progress bars."""
