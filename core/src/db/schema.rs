// The tables, identical on SQLite and PostgreSQL.

diesel::table! {
    subscribers (id) {
        id -> BigInt,
        topic -> Text,
        target_url -> Text,
        filter_expression -> Nullable<Text>,
        secret -> Nullable<Text>,
        enabled -> Bool,
        description -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamp>,
        max_in_flight -> Nullable<Integer>,
        disabled_reason -> Nullable<Text>,
    }
}

diesel::table! {
    delivery_attempts (id) {
        id -> BigInt,
        message_id -> Text,
        subscriber_id -> BigInt,
        attempt -> Integer,
        outcome -> Text,
        http_status -> Nullable<Integer>,
        error_kind -> Nullable<Text>,
        error -> Nullable<Text>,
        duration_ms -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    dead_letters (id) {
        id -> BigInt,
        message_id -> Text,
        subscriber_id -> BigInt,
        topic -> Text,
        request -> Text,
        last_error -> Text,
        attempts -> Integer,
        created_at -> Timestamp,
        replayed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        log_seq -> BigInt,
        topic -> Text,
        author -> Nullable<Text>,
        body -> Text,
        headers -> Text,
        query_params -> Text,
        path_params -> Text,
        http_method -> Text,
        ordering_key -> Nullable<Text>,
        matched -> Integer,
        subscriber_ids -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        name -> Text,
        scope -> Text,
        topics -> Nullable<Text>,
        key_hash -> Text,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        message_id -> Text,
        message -> Text,
        subscriber_ids -> Text,
        idempotency_key -> Nullable<Text>,
        idempotency_record -> Nullable<Text>,
        created_at -> Timestamp,
    }
}
