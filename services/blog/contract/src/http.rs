//! The blog's HTTP shapes (`shared/spec/blog.md`), for the services' OpenAPI documents.
//! The handlers read and write JSON values checked field by field, so that every failing
//! field is reported; these types state the same rules and are never deserialised.
#![allow(dead_code)]

use utoipa::ToSchema;

/// `POST /posts/create`: a title, 1 to [`MAX_TITLE_LEN`](crate::MAX_TITLE_LEN) characters,
/// not only spaces, without NUL.
#[derive(ToSchema)]
pub struct NewPost {
    #[schema(min_length = 1, max_length = 300, pattern = r"^[^\x00]*\S[^\x00]*$")]
    title: String,
}

/// A post, as posts answers it.
#[derive(ToSchema)]
pub struct Post {
    id: String,
    title: String,
}

/// `POST /posts/{id}/comments`: the content, 1 to
/// [`MAX_CONTENT_LEN`](crate::MAX_CONTENT_LEN) characters, not only spaces, without NUL.
#[derive(ToSchema)]
pub struct NewComment {
    #[schema(min_length = 1, max_length = 2000, pattern = r"^[^\x00]*\S[^\x00]*$")]
    content: String,
}

/// Where moderation stands on a comment.
#[derive(ToSchema)]
#[schema(as = CommentStatus, rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
}

/// A comment of a post.
#[derive(ToSchema)]
pub struct Comment {
    id: String,
    content: String,
    status: Status,
}

/// A post with its comments, as query answers it.
#[derive(ToSchema)]
pub struct PostWithComments {
    id: String,
    title: String,
    comments: Vec<Comment>,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    /// The documented limits are the enforced ones.
    #[test]
    fn limits_match_the_contract() {
        let new_post = serde_json::to_value(super::NewPost::schema()).expect("json");
        assert_eq!(
            new_post["properties"]["title"]["maxLength"],
            crate::MAX_TITLE_LEN
        );
        let new_comment = serde_json::to_value(super::NewComment::schema()).expect("json");
        assert_eq!(
            new_comment["properties"]["content"]["maxLength"],
            crate::MAX_CONTENT_LEN
        );
    }
}
