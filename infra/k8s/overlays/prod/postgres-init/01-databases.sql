-- Runs once, when the PostgreSQL data directory is first initialised.
-- One database per service, owned by the application role (POSTGRES_USER).
CREATE DATABASE posts;
CREATE DATABASE comments;
CREATE DATABASE query;
CREATE DATABASE moderation;
CREATE DATABASE eventbus;
