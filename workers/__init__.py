"""The Celery side: the app, thin tasks, the delivery engine, the limiter, one adapter per platform.

Workers import `dispatcher`; `dispatcher` never imports `workers`.
"""
