"""MLflow tracking of nightlies: result objects, metric names, logging, outbox and sync, compare, history."""
