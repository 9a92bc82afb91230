//! The blog's HTTP shapes (`shared/spec/blog.md`): one type per request body and per
//! answer. A request type is what the handler's extractor parses (every failing field
//! reported) and what the OpenAPI document shows; an answer type is what the handler
//! serialises.

use serde::Serialize;
use switchyard_wire::{Text, request_body};
use utoipa::ToSchema;

use crate::{CommentId, CommentStatus, MAX_CONTENT_LEN, MAX_TITLE_LEN, PostId};

request_body! {
    /// `POST /posts/create`: a title, 1 to [`MAX_TITLE_LEN`](crate::MAX_TITLE_LEN)
    /// characters, not only spaces, without NUL.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct NewPost {
        #[schema(value_type = String, min_length = 1, max_length = 300, pattern = r"^[^\x00]*\S[^\x00]*$")]
        pub title: Text<MAX_TITLE_LEN> = "title",
    }
}

/// A post, as posts answers it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Post {
    #[schema(value_type = String)]
    pub id: PostId,
    pub title: String,
}

request_body! {
    /// `POST /posts/{id}/comments`: the content, 1 to
    /// [`MAX_CONTENT_LEN`](crate::MAX_CONTENT_LEN) characters, not only spaces, without NUL.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct NewComment {
        #[schema(value_type = String, min_length = 1, max_length = 2000, pattern = r"^[^\x00]*\S[^\x00]*$")]
        pub content: Text<MAX_CONTENT_LEN> = "content",
    }
}

/// A comment of a post.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Comment {
    #[schema(value_type = String)]
    pub id: CommentId,
    pub content: String,
    pub status: CommentStatus,
}

/// A post with its comments, as query answers it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PostWithComments {
    #[schema(value_type = String)]
    pub id: PostId,
    pub title: String,
    pub comments: Vec<Comment>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_wire::{BodyError, RequestBody};
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
        let long = "x".repeat(crate::MAX_TITLE_LEN + 1);
        assert_eq!(
            super::NewPost::from_json(&json!({ "title": long })),
            Err(BodyError::Fields(vec![(
                "title",
                format!("title must be at most {} characters", crate::MAX_TITLE_LEN)
            )]))
        );
    }
}
