-- One database per service (docker/compose.yaml).
CREATE DATABASE treasury;
CREATE DATABASE hydra;
CREATE DATABASE aegis;
CREATE DATABASE wallet_executor;
CREATE DATABASE wallet_executor_lnd;
CREATE DATABASE lightning_ops;
