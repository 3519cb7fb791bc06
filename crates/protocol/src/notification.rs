//! Notifications (SPEC §12): a message for one user on all of its
//! connections, stored until read, numbered per user.

use serde::{Deserialize, Serialize};

use crate::bounded::{any, bounded_string};
use crate::ids::{LastSeq, NotificationId, Seq};
use crate::limits::{MAX_LINK_CHARS, MAX_NOTIFICATION_BODY_CHARS, MAX_NOTIFICATION_TITLE_CHARS};
use crate::time::Timestamp;
use crate::topic::EventName;

bounded_string! {
    /// A notification's one line: 1 to `MAX_NOTIFICATION_TITLE_CHARS` characters.
    NotificationTitle,
    chars: 1, MAX_NOTIFICATION_TITLE_CHARS,
    allowed: any,
    pattern: None,
}

bounded_string! {
    /// A notification's text: at most `MAX_NOTIFICATION_BODY_CHARS` characters.
    NotificationBody,
    chars: 0, MAX_NOTIFICATION_BODY_CHARS,
    allowed: any,
    pattern: None,
}

bounded_string! {
    /// Where a notification leads (a URL or a path of the shop's site): 1 to
    /// `MAX_LINK_CHARS` characters, no control characters.
    Link,
    chars: 1, MAX_LINK_CHARS,
    allowed: |c: char| !c.is_control(),
    pattern: None,
}

/// `notification`: a message for one user, on all of its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The notification.
    pub id: NotificationId,
    /// Its position among the user's notifications: 1 for the first, then
    /// without gaps.
    pub seq: Seq,
    /// What it is about, for the client to choose an icon or a sound
    /// (`order.shipped`, `conversation.requeued`…).
    pub kind: EventName,
    /// One line.
    pub title: NotificationTitle,
    /// The text.
    pub body: NotificationBody,
    /// Where to read more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
    /// When the server stored it.
    pub created_at: Timestamp,
}

/// `notifications` of `session.ready`: where the user's notifications stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationsState {
    /// How many are not read yet.
    pub unread: u64,
    /// The `seq` of the user's last notification; 0 when it has none.
    pub last_seq: LastSeq,
}

/// `notification.read`, both ways: the user has read its notifications up to
/// `upToSeq` (client), and so every connection of the user learns it (server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationRead {
    /// Every notification with a `seq` up to this one is read.
    pub up_to_seq: Seq,
}
