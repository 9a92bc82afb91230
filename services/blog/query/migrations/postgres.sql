CREATE TABLE posts (
    ord BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL
);
CREATE TABLE comments (
    ord BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    post_id TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX comments_by_post ON comments (post_id, ord);
CREATE TABLE bus_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO bus_position (id, seq) VALUES (1, 0);
