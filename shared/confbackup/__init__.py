"""Configuration backup: one passphrase-encrypted file holding vbm's database and keys
(docs/design.md, "Configuration backup")."""
