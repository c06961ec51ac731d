"""Where a repository's objects live: local disk, S3, Azure Blob, SFTP, rclone."""
