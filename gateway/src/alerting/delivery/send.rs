//! One message to one receiver, on the calling (blocking) thread, and how
//! its answer sorts into an [`Outcome`]: the network edge of delivery.
//! Errors say why in words for stats and logs, never with the receiver's
//! URL (it may hold credentials).

use std::time::Duration;

use super::queue::Outcome;
use super::Channel;
use crate::alerting::channels::{Email, Post};

/// HTTP answers that judge the document, not the moment: sending it again
/// gets the same answer. 401/403/404 are the channel's configuration (a
/// token or URL to fix, after which every document goes), so they retry.
fn rejects_document(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

/// One `POST`.
pub(super) fn post_once(post: &Post, token: Option<&str>, timeout: Duration) -> Outcome {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("pressline-gateway/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut request = agent.post(&post.url).set("Content-Type", post.content_type);
    for (name, value) in &post.headers {
        request = request.set(name, value);
    }
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.send_bytes(&post.body) {
        Ok(_) => Outcome::Delivered,
        Err(ureq::Error::Status(code, response)) => {
            let body: String = response
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            let error = format!("HTTP {code} from the receiver: {}", body.trim());
            if rejects_document(code) {
                Outcome::Rejected(error)
            } else {
                Outcome::Failed(error)
            }
        }
        Err(ureq::Error::Transport(t)) => {
            Outcome::Failed(format!("cannot reach the receiver: {t}"))
        }
    }
}

/// One e-mail through the channel's relay.
pub(super) fn mail_once(channel: &Channel, mail: &Email, timeout: Duration) -> Outcome {
    match build_mail(channel, mail) {
        Ok(message) => relay(channel, &message, timeout),
        // The channel's addresses are checked at start; a document the
        // mail builder refuses is refused for good.
        Err(error) => Outcome::Rejected(error),
    }
}

fn build_mail(channel: &Channel, mail: &Email) -> Result<lettre::Message, String> {
    use lettre::message::{header::ContentType, Mailbox};
    let from: Mailbox = channel
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("bad sender address: {e}"))?;
    let mut message = lettre::Message::builder()
        .from(from)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .header(ContentType::TEXT_PLAIN);
    for to in &channel.to {
        message = message.to(to
            .parse()
            .map_err(|e| format!("bad recipient {to:?}: {e}"))?);
    }
    message
        .body(mail.body.clone())
        .map_err(|e| format!("cannot build the e-mail: {e}"))
}

fn relay(channel: &Channel, message: &lettre::Message, timeout: Duration) -> Outcome {
    use lettre::Transport as _;
    let transport = match lettre::SmtpTransport::from_url(&channel.url) {
        Ok(t) => t.timeout(Some(timeout)).build(),
        Err(e) => return Outcome::Failed(format!("unusable SMTP relay URL: {e}")),
    };
    match transport.send(message) {
        Ok(_) => Outcome::Delivered,
        Err(e) => {
            let error = format!("the SMTP relay did not take the e-mail: {e}");
            if e.is_permanent() {
                Outcome::Rejected(error)
            } else {
                Outcome::Failed(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_about_the_document_reject_it() {
        for code in [400, 413, 415, 422] {
            assert!(rejects_document(code), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 502, 503] {
            assert!(!rejects_document(code), "{code} is worth retrying");
        }
    }
}
