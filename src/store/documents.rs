//! Document metadata and who may read each document (its grants). The bytes themselves
//! live in the blob store (`blobs`), one copy per SHA-256.

use super::sql::{q, Conn, Row};

use super::{Store, StoreError, WriteTx};

/// `via` of a grant made by uploading.
pub const VIA_UPLOAD: &str = "upload";

/// One agency's access to a document, with the metadata of the upload it knows it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub document_id: String,
    pub agency: String,
    pub size_bytes: i64,
    pub media_type: String,
    pub title: String,
    pub uploaded_by: String,
    pub uploaded_at: i64,
    /// `upload`, or the referral or information request that shared it.
    pub via: String,
}

const GRANT_COLUMNS: &str = "g.document_id, g.agency, d.size_bytes, g.media_type, g.title, \
     g.uploaded_by, g.uploaded_at, g.via";

impl WriteTx {
    /// Records an upload by `grant.agency`: the document (once per content) and the
    /// agency's grant. Returns the agency's grant and whether it already had one (then
    /// nothing changes: the earlier upload stands).
    pub async fn record_upload(
        &mut self,
        grant: &Grant,
        now: i64,
    ) -> Result<(Grant, bool), StoreError> {
        q(
            "INSERT INTO documents (id, size_bytes, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&grant.document_id)
        .bind(grant.size_bytes)
        .bind(now)
        .execute(self.conn())
        .await?;
        let had = self.insert_grant(grant, now).await?;
        let stored = self
            .document_grant(&grant.document_id, &grant.agency)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("grant of {} vanished", grant.document_id))
            })?;
        Ok((stored, had))
    }

    /// `agency`'s grant of a document, if it may read it.
    pub async fn document_grant(
        &mut self,
        document_id: &str,
        agency: &str,
    ) -> Result<Option<Grant>, StoreError> {
        fetch_grant(self.conn(), document_id, agency).await
    }

    /// Shares the documents an exchange references: `from` must be able to read each;
    /// `to` is granted each (with `from`'s view of its metadata) unless it already may.
    /// Returns the positions of the documents `from` may not read; when there are any,
    /// nothing is shared (the caller refuses the exchange, which rolls back).
    pub async fn share_documents(
        &mut self,
        document_ids: &[&str],
        from: &str,
        to: &str,
        via: &str,
        now: i64,
    ) -> Result<Vec<usize>, StoreError> {
        let mut grants = Vec::with_capacity(document_ids.len());
        let mut unreadable = Vec::new();
        for (i, id) in document_ids.iter().enumerate() {
            match self.document_grant(id, from).await? {
                Some(g) => grants.push(g),
                None => unreadable.push(i),
            }
        }
        if !unreadable.is_empty() {
            return Ok(unreadable);
        }
        for g in grants {
            let shared = Grant {
                agency: to.to_string(),
                via: via.to_string(),
                ..g
            };
            self.insert_grant(&shared, now).await?;
        }
        Ok(Vec::new())
    }

    /// Inserts a grant unless the agency has one; returns whether it had one.
    async fn insert_grant(&mut self, g: &Grant, now: i64) -> Result<bool, StoreError> {
        let inserted = q(
            "INSERT INTO document_grants (document_id, agency, media_type, title, uploaded_by, \
             uploaded_at, via, granted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (document_id, agency) DO NOTHING",
        )
        .bind(&g.document_id)
        .bind(&g.agency)
        .bind(&g.media_type)
        .bind(&g.title)
        .bind(&g.uploaded_by)
        .bind(g.uploaded_at)
        .bind(&g.via)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(inserted == 0)
    }
}

impl Store {
    /// `agency`'s grant of a document, if it may read it.
    pub async fn document_grant(
        &self,
        document_id: &str,
        agency: &str,
    ) -> Result<Option<Grant>, StoreError> {
        fetch_grant(self.point_reads(), document_id, agency).await
    }

    /// Whether the document is stored at all (for the audit entry of a refused read; the
    /// caller is told NOT_FOUND either way).
    pub async fn document_exists(&self, document_id: &str) -> Result<bool, StoreError> {
        let row = q("SELECT id FROM documents WHERE id = $1")
            .bind(document_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

async fn fetch_grant(
    ex: impl Conn,
    document_id: &str,
    agency: &str,
) -> Result<Option<Grant>, StoreError> {
    let row = q(format!(
        "SELECT {GRANT_COLUMNS} FROM document_grants g JOIN documents d ON d.id = g.document_id \
         WHERE g.document_id = $1 AND g.agency = $2"
    ))
    .bind(document_id)
    .bind(agency)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(grant_row).transpose()
}

fn grant_row(r: &impl Row) -> Result<Grant, StoreError> {
    Ok(Grant {
        document_id: r.col("document_id")?,
        agency: r.col("agency")?,
        size_bytes: r.col("size_bytes")?,
        media_type: r.col("media_type")?,
        title: r.col("title")?,
        uploaded_by: r.col("uploaded_by")?,
        uploaded_at: r.col("uploaded_at")?,
        via: r.col("via")?,
    })
}
