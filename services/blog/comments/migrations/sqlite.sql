CREATE TABLE comments (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    post_id TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX comments_by_post ON comments (post_id, ord);
