# The seed's `subscriber`. Fields the user lacks are left out (JSON.stringify leaves out
# undefined), except in `tags`, where they are null as in the template. No user at all is
# an error (dead letter, nothing sent), where the template would throw. (`$user >= {}`:
# only objects sort at or after {}; it is jq's cheapest object test.)
select(.data.event_type == "user.verified")
| .data.user as $user
| if $user == null then error("data.user is missing") else . end
| (if $user >= {} then $user else {} end) as $u
| def field($name; $key): if $u | has($key) then {($name): $u[$key]} else {} end;
field("email_address"; "email")
+ {
    status: "subscribed",
    merge_fields: (
      field("FNAME"; "first_name")
      + field("LNAME"; "last_name")
      + field("USERTYPE"; "user_type")
    ),
    tags: [$u.user_type, "pitchey-user"]
  }
