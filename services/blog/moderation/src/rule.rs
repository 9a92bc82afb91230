//! The moderation rule.

use switchyard_blog_contract::CommentStatus;

/// Rejects content containing any blocked word (case-sensitive substring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    blocked: Vec<String>,
}

impl Rule {
    pub fn new(blocked: Vec<String>) -> Self {
        Rule {
            blocked: blocked.into_iter().filter(|w| !w.is_empty()).collect(),
        }
    }

    pub fn judge(&self, content: &str) -> CommentStatus {
        if self.blocked.iter().any(|w| content.contains(w.as_str())) {
            CommentStatus::Rejected
        } else {
            CommentStatus::Approved
        }
    }
}

impl Default for Rule {
    fn default() -> Self {
        Rule::new(vec!["orange".to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orange_is_rejected_case_sensitively() {
        let rule = Rule::default();
        assert_eq!(rule.judge("I like oranges"), CommentStatus::Rejected);
        assert_eq!(rule.judge("I like Oranges"), CommentStatus::Approved);
        assert_eq!(rule.judge("fine"), CommentStatus::Approved);
    }

    #[test]
    fn word_list_is_configurable() {
        let rule = Rule::new(vec!["kiwi".into(), "".into(), "plum".into()]);
        assert_eq!(rule.judge("plum jam"), CommentStatus::Rejected);
        assert_eq!(rule.judge("orange"), CommentStatus::Approved);
        assert_eq!(rule.judge("anything"), CommentStatus::Approved);
    }
}
