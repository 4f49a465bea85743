"""``manage.py cleanup_audit_logs``: execution-log retention from a Django project."""
